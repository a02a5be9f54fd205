"""Every bound in Hearth, in one place, with its unit last in its name.

TigerBeetle's rule: put a limit on everything. A peer can only make us hold as much as these
numbers allow; raising one is a protocol decision and belongs in the changelog.
"""

from typing import Final

# Wire
MESSAGE_BYTES_MAX: Final = 256 * 1024  # one decoded message, envelope included
GOSSIP_MESSAGE_BYTES_MAX: Final = 64 * 1024
FRAME_BYTES_MAX: Final = 1024 * 1024  # one length-prefixed frame on a direct stream
ARRAY_ITEMS_MAX: Final = 4096  # items in any array inside a message
STRING_BYTES_MAX: Final = 4096
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1

# Envelope and replay
ENVELOPE_TTL_MS_MAX: Final = 10 * 60 * 1000  # expires_ms - created_ms may not exceed this
CLOCK_SKEW_MS_MAX: Final = 30 * 1000  # created_ms may run this far ahead of our clock
REPLAY_CACHE_ENTRIES_MAX: Final = 200_000
# One author's share of the replay cache (ADR 0013): beyond it only that author is refused. An
# honest node's own traffic (ads every 30 s, bids, awards, results, receipts; TTLs of 30-600 s)
# stays far below it; one identity flooding fills 1/25 of the cache at most.
REPLAY_CACHE_AUTHOR_ENTRIES_MAX: Final = 8_192

# Market
# ADR 0032, amended twice for issue 14: every host advertises every 60 s, and an ad lives 180 s
# from when it is made. Each node takes in every ad of the network, each several times over (its
# mesh peers forward it), so the interval sets the idle cost: at 30 s, an idle node of a 50-node
# network spent three quarters of its CPU on receiving, checking, forwarding and taking in ads,
# and 50 nodes wanted more than the 2-core machine had. An ad carries no news between changes (a
# change of prices, caps or energy state goes out at once), so the interval is a keep-alive:
# three lost in a row before a live host drops out of a market, and a host that has gone is
# forgotten within 180 s. A lost ad is repaired sooner by the market sync (ADR 0039).
CAPACITY_AD_TTL_MS: Final = 180 * 1000
CAPACITY_AD_INTERVAL_MS: Final = 60 * 1000
# A peer met for the first time brings the next ad forward to one gossipsub heartbeat later (it
# is in our mesh by then), but never within the gap of the last ad: while a node meets its
# first dozen peers, one ad per gap goes out, not one per peer (the newcomer's market fills by
# the market sync, not by these). Only the first two such ads after start: the ad made at start
# reached nobody, the next carries it in, and from then on the market sync (ADR 0039) hands it
# on. In a 50-node start each node met new peers for about a minute and so advertised every
# 10 s instead of every 60 s, while the machine was shortest of CPU (ADR 0032, third amendment).
CAPACITY_AD_AFTER_CONNECT_MS: Final = 1000
CAPACITY_AD_AFTER_CONNECT_GAP_MS: Final = 10_000
CAPACITY_AD_BROUGHT_FORWARD_MAX: Final = 2
CAPACITY_AD_PEERS_MET_MAX: Final = 100_000
# A change of the host's energy state republishes its ad at once, but never twice within this.
CAPACITY_AD_GAP_MS_MIN: Final = 1000
MARKET_PEERS_MAX: Final = 100_000
PRICE_CURVE_HOURS: Final = 24
RUNTIMES_MAX: Final = 8

# Reputation (application-level, kept across reconnects)
REPUTATION_PEERS_MAX: Final = 100_000
REPUTATION_SCORE_MIN: Final = -1_000_000
# At or below this score in the engine's book a peer is banned at the transport (ADR 0021).
REPUTATION_BAN_SCORE: Final = -1000
REPUTATION_SCORE_MAX: Final = 1_000_000

# Streams and queues
STREAM_READ_TIMEOUT_MS: Final = 10 * 1000
GOSSIP_QUEUE_MESSAGES_MAX: Final = 1024
EVENT_QUEUE_MESSAGES_MAX: Final = 4096
# One long-lived stream per peer for one-way messages (ADR 0038): sends waiting for it, the
# bytes they hold, how long it may sit unused before the sender closes it, and the longest
# protocol id a frame on it may name.
WIRE_QUEUE_MESSAGES_MAX: Final = 512
WIRE_QUEUE_BYTES_MAX: Final = 8 * 1024 * 1024
WIRE_IDLE_MS: Final = 60 * 1000
WIRE_PROTOCOL_ID_BYTES_MAX: Final = 128
# Frames one peer may send us on its wire streams: a burst, then one per interval. Past it the
# receiver reads that peer's frames more slowly (yamux holds the rest back); none are dropped.
WIRE_PEER_FRAMES_BURST: Final = 4096
WIRE_PEER_FRAME_INTERVAL_MS: Final = 1

# Sandbox (docs/adr/0005-sandbox.md): what one job may ask of a host. The stack size is part of
# the result (where deep recursion traps), so every honest replica must run with the same one.
JOB_MODULE_BYTES_MAX: Final = 32 * 1024 * 1024
JOB_INPUT_BYTES_MAX: Final = 64 * 1024 * 1024
JOB_OUTPUT_BYTES_MAX: Final = 64 * 1024 * 1024
JOB_FUEL_MAX: Final = 2**62  # wasmtime keeps fuel in a signed 64-bit counter
JOB_MEMORY_BYTES_MAX: Final = 4 * 1024 * 1024 * 1024  # all a wasm32 memory can address
JOB_DEADLINE_MS_MAX: Final = 60 * 60 * 1000
JOB_WASM_STACK_BYTES: Final = 512 * 1024

# Peer discovery (p2p/discovery.py)
# Stop dialling peers learnt by exchange at this many (inbound ones are still taken). Each
# connection costs an idle node its share of every flood-published ad, IHAVEs, pings and
# exchange asks: at 32, 50 nodes on one 2-core machine held 28-48 connections each and outgrew
# the machine within minutes of converging (issue 14). 12 is three meshes' worth (D = 4).
PEERS_CONNECTED_TARGET: Final = 12
PEER_EXCHANGE_PEERS_MAX: Final = 32  # peers in one peer-exchange reply
PEER_EXCHANGE_ADDRS_MAX: Final = 4  # addresses per peer in one peer-exchange reply
PEER_EXCHANGE_DIALS_MAX: Final = 8  # new peers dialled per discovery round
DIAL_TIMEOUT_MS: Final = 5 * 1000
BOOTSTRAP_BACKOFF_MS_MAX: Final = 30 * 1000

# Ledger (docs/adr/0004-ledger-format.md). Mutual credit: every node starts at 0 and may spend
# down to -CREDIT_LIMIT_MC; raising the limit is a network-wide decision.
CREDIT_LIMIT_MC: Final = 1_000_000  # 1,000 credits
LEDGER_ENTRY_BYTES_MAX: Final = 48 * 1024  # one entry on the wire (fork evidence is largest)
LEDGER_PROOF_ENTRY_BYTES_MAX: Final = 16 * 1024  # each forked entry inside a recordable proof
LEDGER_RANGE_ENTRIES_MAX: Final = 256  # entries in one /hearth/ledger/1 response
RECEIPT_TTL_MS_MAX: Final = 10 * 60 * 1000  # receipt expires_ms - created_ms
JOB_ID_BYTES_MAX: Final = 64
MISMATCH_EVIDENCE_HASHES_MAX: Final = 16
REFUSED_AUTHORS_MAX: Final = 100_000
LEDGER_GROUP_ENTRIES_MAX: Final = 1024  # entries committed in one group commit

# Jobs: auction, execution, verification (ADR 0006, ADR 0007)
HASH_BYTES: Final = 32  # sha256 of blobs, results and commitments
SALT_BYTES: Final = 16
REQUIREMENTS_MAX: Final = 16
OPERATOR_LABEL_BYTES_MAX: Final = 64
OUTPUT_INLINE_BYTES_MAX: Final = 64 * 1024  # a larger output is fetched over /hearth/blob/1
# Hosts that tell a publisher why they do not bid, per call, about (ADR 0023): in a larger market
# a seeded sample of this many does, so a call to thousands of hosts brings back a few dozen.
DECLINES_PER_CALL_MAX: Final = 32
JOB_STDERR_BYTES_MAX: Final = 8 * 1024  # the tail of a job's stderr a result carries (ADR 0023)
EXIT_CODE_MAX: Final = 2**31 - 1  # a job's exit status; EXIT_CODE_NONE (-1) when it never exited
BIDS_PER_AUCTION_MAX: Final = 256
BID_WINDOW_MS_MIN: Final = 100
BID_WINDOW_MS_MAX: Final = 60 * 1000
LEASE_MS_MAX: Final = 3_600_000
REPLICAS_MAX: Final = 15
CALL_ROUNDS_MAX: Final = 10  # fresh calls for bids for one job when candidates run out
BID_WINDOW_MS_ROUND_MAX: Final = 8_000  # later rounds' windows double up to this
# Directed invitations (ADR 0031): hosts invited per call, and the share of them drawn at random
# from outside the best-ranked, so that cheap newcomers get their chance.
INVITEES_PER_CALL_MAX: Final = 16
INVITEES_EXPLORE_PCT: Final = 25
# A module and input this small together travel inside the award, not fetched (ADR 0031).
AWARD_INLINE_BYTES_MAX: Final = 64 * 1024
PUBLISHER_JOBS_OPEN_MAX: Final = 1024
PUBLISHER_JOBS_KEPT_MAX: Final = 4096  # finished jobs kept for queries, oldest forgotten first
WORKER_TASKS_MAX: Final = 1024  # awards a worker remembers (running and recently finished)
WORKER_BIDS_REMEMBERED_MAX: Final = 4096
WORKER_TASK_RETENTION_MS: Final = 10 * 60 * 1000  # keep a finished task to answer re-sent awards
WORKER_PUBLISHERS_OWING_MAX: Final = 10_000
# Adaptive jobs' pay held in escrow (ADR 0034, amendment): a publisher may promise it no later
# than this after the job's deadline, and may hold at most this many jobs' pay per host.
PAY_HOLD_MS_MAX: Final = 24 * 60 * 60 * 1000
ESCROW_ON_PROOF_MAX: Final = REPUTATION_PEERS_MAX  # caught hosts on proof, as many as known
ESCROW_JOBS_PER_HOST_MAX: Final = 256  # a held task stays in the host's WORKER_TASKS_MAX
PEER_ADDRESSES_MAX: Final = 100_000

# Blobs (modules, inputs, outputs) on /hearth/blob/1
BLOB_BYTES_MAX: Final = 64 * 1024 * 1024
BLOB_CHUNK_BYTES_MAX: Final = 512 * 1024
BLOB_STORE_BYTES_MAX: Final = 4 * 1024 * 1024 * 1024
BLOB_REQUEST_TIMEOUT_MS: Final = 15 * 1000
