"""`hearth testnet ...`: many real nodes on this machine, for trying Hearth and for research."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, cast

import typer
from rich.console import Console
from rich.table import Table

from hearth.node import lifeline, paths
from hearth.node.commands.common import JSON_OPTION, fail, print_json
from hearth.testnet import launch
from hearth.testnet.netns.spec import HomeSpec, LabSpec, LinkClass, RouterKind, SpecError
from hearth.testnet.observe import ask, market_complete

MARKET_WAIT_S = 120.0  # a loaded machine: gossip among many processes on two cores
app = typer.Typer(help="Run a local testnet of real node processes.", no_args_is_help=True)
DIR_OPTION = typer.Option(None, "--dir", help="Testnet folder (default: <data dir>/testnet).")
SHIPPED_SCENARIOS = sorted(
    entry.name.removesuffix(".toml")
    for entry in resources.files("hearth.testnet").joinpath("scenarios").iterdir()
    if entry.name.endswith(".toml")
)
SCENARIO_ARGUMENT = typer.Argument(
    ..., help=f"A scenario file, or the name of a shipped one: {', '.join(SHIPPED_SCENARIOS)}."
)
OUT_OPTION = typer.Option(..., "--out", help="Folder for the report (created if missing).")
RUN_DIR_OPTION = typer.Option(None, "--dir", help="Folder for the nodes (default: <out>/testnet).")


def testnet_dir(directory: Path | None) -> Path:
    return directory or paths.data_dir() / "testnet"


@app.command("up")
def up(
    n: int = typer.Option(3, "-n", help="How many nodes."),
    directory: Path = DIR_OPTION,
    base: str = typer.Option(
        launch.DEFAULT_BASE, help="Address of the first node; the rest follow."
    ),
    netns: bool = typer.Option(
        False, "--netns", help="Each node in its own network namespace, homes behind NAT (root)."
    ),
    homes: int = typer.Option(2, help="--netns: homes behind NAT routers, all on 192.168.1.10."),
    public: int = typer.Option(1, help="--netns: public nodes (the first is the bootstrap)."),
    router: str = typer.Option(
        "mixed", help="--netns: port-restricted, symmetric, or mixed (alternating)."
    ),
    delay_ms: int = typer.Option(0, help="--netns: delay per packet on each home's uplink."),
    jitter_ms: int = typer.Option(0, help="--netns: +/- this much on the delay."),
    loss_pct: float = typer.Option(0.0, help="--netns: packets lost on each home's uplink, %."),
    rate_kbit: int = typer.Option(0, help="--netns: each home's uplink rate cap (0: none)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Start N nodes on 127.0.0.2, .3, ... (or from --base) sharing a private-network key.

    Each node is its own network group, so jobs published on the testnet find diverse hosts.
    With --netns (root): public nodes and NAT homes in a namespace lab, links shaped (ADR 0037)."""
    try:
        if netns:
            nodes = _up_netns(
                testnet_dir(directory),
                homes,
                public,
                router,
                LinkClass("home", delay_ms, jitter_ms, loss_pct, rate_kbit),
            )
        else:
            # The nodes outlive this command: `hearth testnet down` stops them.
            nodes = launch.up(testnet_dir(directory), n, base=base, tied=False)
    except (launch.TestnetError, SpecError) as exc:
        fail(str(exc))
    wait_for_market(nodes)
    if json_output:
        print_json([{"name": x.name, **x.info} for x in nodes])
        return
    for node in nodes:
        typer.echo(f"{node.name}  {node.host}  {node.info['peer_id']}  HEARTH_HOME={node.home}")


def _up_netns(
    root: Path, homes: int, public: int, router: str, link: LinkClass
) -> list[launch.LaunchedNode]:
    import secrets

    from hearth.testnet.netns import launch as netns_launch
    from hearth.testnet.netns.lab import unavailable_reason
    from hearth.testnet.netns.topology import LabPlan

    why = unavailable_reason()
    if why:
        fail(f"testnet up --netns: {why}")
    kinds = ("port-restricted", "symmetric")
    if router not in (*kinds, "mixed"):
        fail(f"--router {router!r}: use port-restricted, symmetric or mixed")
    routers = [kinds[i % 2] if router == "mixed" else router for i in range(homes)]
    spec = LabSpec(
        public=("lan",) * public,
        homes=tuple(HomeSpec(cast(RouterKind, r), "home") for r in routers),
        links=(link,),
    )
    spec.check()
    _, nodes = netns_launch.up(root, LabPlan(spec), psk=secrets.token_bytes(32))
    return nodes


def wait_for_market(nodes: list[launch.LaunchedNode]) -> None:
    """Return once every node has every other's offer, so that a job published next finds its
    hosts; interrupted meanwhile, stop the nodes (nothing is left behind)."""
    try:
        launch.wait_for(
            lambda: market_complete(nodes), MARKET_WAIT_S, "every node to see every other"
        )
    except launch.TestnetError as exc:
        typer.echo(f"warning: {exc}; a job published now may find too few hosts", err=True)
    except BaseException:
        with lifeline.held():
            launch.stop(nodes)
        raise


@app.command("down")
def down(directory: Path = DIR_OPTION) -> None:
    """Stop exactly the processes `up` started."""
    from hearth.testnet.netns import launch as netns_launch

    root = testnet_dir(directory)
    try:
        count = netns_launch.down(root) if netns_launch.lab_of(root) else launch.down(root)
    except launch.TestnetError as exc:
        fail(str(exc))
    typer.echo(f"stopped {count} nodes")


@app.command("status")
def status(directory: Path = DIR_OPTION, json_output: bool = JSON_OPTION) -> None:
    """One row per node: alive, peers, price."""
    try:
        nodes = launch.load(testnet_dir(directory))
    except launch.TestnetError as exc:
        fail(str(exc))
    rows = []
    for node in nodes:
        alive = launch.is_alive(node.pid, node.home)
        row: dict[str, Any] = {
            "name": node.name,
            "host": node.host,
            "pid": node.pid,
            "alive": alive,
        }
        if alive and node.info:
            info = ask(node, "/v1/status")
            row |= {
                "peer_id": info["peer_id"],
                "peers": info["peers_connected"],
                "price_mc_per_tfuel": info["ad"]["price_mc_per_tfuel"],
            }
        rows.append(row)
    if json_output:
        print_json(rows)
        return
    table = Table(title=f"Testnet in {testnet_dir(directory)}")
    for column in ("node", "host", "alive", "peers", "price now"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["host"],
            "yes" if row["alive"] else "NO",
            str(row.get("peers", "-")),
            str(row.get("price_mc_per_tfuel", "-")),
        )
    Console().print(table)


SUMMARY_ROWS = (
    "jobs_published",
    "jobs_verified",
    "jobs_failed",
    "jobs_completed_pct",
    "wrong_results_accepted",
    "latency_ms_p50",
    "latency_ms_p99",
    "credits_sum_mc",
    "cheaters_earned_mc",
    "nodes_killed",
    "nodes_restarted",
    "forks_detected",
)


@app.command("run")
def run(
    scenario: Path = SCENARIO_ARGUMENT,
    out: Path = OUT_OPTION,
    directory: Path = RUN_DIR_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Run a scenario on real nodes (adversaries, churn, jobs) and write a report to --out.

    Exit status: 0 when every check in summary.json holds, 1 when one fails, 130 on Ctrl-C.
    """
    from hearth.testnet.run import RunOptions, run_scenario
    from hearth.testnet.scenario import ScenarioError

    try:
        summary = run_scenario(RunOptions(scenario_file(scenario), out, directory))
    except ScenarioError as exc:
        fail(str(exc), exit_code=2)
    except launch.TestnetError as exc:
        fail(str(exc))
    if json_output:
        print_json({k: v for k, v in summary.items() if k not in ("jobs", "scenario_text")})
    else:
        print_run_summary(summary, out)
    if summary["interrupted"]:
        raise typer.Exit(130)
    if not summary["ok"]:
        raise typer.Exit(1)


def shipped_scenarios() -> dict[str, Path]:
    folder = resources.files("hearth.testnet") / "scenarios"
    return {
        p.name.removesuffix(".toml"): Path(str(p))
        for p in folder.iterdir()
        if p.name.endswith(".toml")
    }


def scenario_file(given: Path) -> Path:
    """A path as given, or a shipped scenario by name (`hearth testnet run cheaters`)."""
    if given.exists() or given.suffix or len(given.parts) > 1:
        return given
    shipped = shipped_scenarios()
    if str(given) not in shipped:
        names = ", ".join(sorted(shipped))
        fail(f"no scenario file or shipped scenario named {str(given)!r}; try one of {names}", 2)
    return shipped[str(given)]


def print_run_summary(summary: dict[str, Any], out: Path) -> None:
    table = Table(title=f"Scenario {summary['scenario']} (seed {summary['seed']})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in SUMMARY_ROWS:
        table.add_row(key, str(summary[key]))
    for name, held in summary["checks"].items():
        table.add_row(f"check: {name}", "yes" if held else "NO")
    console = Console()
    console.print(table)
    for name in summary["nodes_died"]:
        console.print(f"[red]{name} died during the run; see events.jsonl[/red]")
    console.print(f"report in {out} (summary.json, events.jsonl, metrics.csv, plots)")


@app.command("demo")
def demo(
    seed: int = typer.Option(1, help="Seed for the jobs' inputs."),
    directory: Path = DIR_OPTION,
) -> None:
    """Start a node per host profile, publish jobs, show them verified and paid, and each
    profile's earnings against its energy cost; stop."""
    from hearth.testnet.demo import run_demo

    try:
        ok = run_demo(seed, directory)
    except launch.TestnetError as exc:
        fail(str(exc))
    if not ok:
        fail("the demo found a problem (listed above)")
