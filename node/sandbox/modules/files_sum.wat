;; Reads /input/data in 1 MiB reads and writes /output/sum.bin: the byte count, then the wrapping
;; sum of its little-endian 64-bit words (a read's tail shorter than a word adds byte by byte),
;; both as little-endian u64. Prints its arguments and environment to stdout, NUL-separated.
;; Exit codes: 10+errno opening the input, 2 reading it, 100+errno opening the output.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 40)
  (data (i32.const 16) "data")
  (data (i32.const 32) "sum.bin")
  ;; 64: an fd out; 80: one iovec; 96: a count out; 100: a size out; 128: the result;
  ;; 4096: argv/environ pointers; 8192: their strings; 65536: the 1 MiB read buffer.
  (func $print_strings (param $size i32)
    (i32.store (i32.const 80) (i32.const 8192))
    (i32.store (i32.const 84) (local.get $size))
    (drop (call $fd_write (i32.const 1) (i32.const 80) (i32.const 1) (i32.const 96))))
  (func (export "_start")
    (local $in i32) (local $out i32) (local $n i32) (local $i i32)
    (local $count i64) (local $sum i64) (local $err i32)
    (drop (call $args_sizes_get (i32.const 96) (i32.const 100)))
    (drop (call $args_get (i32.const 4096) (i32.const 8192)))
    (call $print_strings (i32.load (i32.const 100)))
    (drop (call $environ_sizes_get (i32.const 96) (i32.const 100)))
    (drop (call $environ_get (i32.const 4096) (i32.const 8192)))
    (call $print_strings (i32.load (i32.const 100)))
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 4)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 10) (local.get $err)))))
    (local.set $in (i32.load (i32.const 64)))
    (i32.store (i32.const 80) (i32.const 65536))
    (i32.store (i32.const 84) (i32.const 1048576))
    (block $done
      (loop $read
        (local.set $err (call $fd_read (local.get $in) (i32.const 80) (i32.const 1) (i32.const 96)))
        (if (local.get $err) (then (call $proc_exit (i32.const 2))))
        (local.set $n (i32.load (i32.const 96)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $count (i64.add (local.get $count) (i64.extend_i32_u (local.get $n))))
        (local.set $i (i32.const 0))
        (block $words
          (loop $word
            (br_if $words (i32.gt_u (i32.add (local.get $i) (i32.const 8)) (local.get $n)))
            (local.set $sum (i64.add (local.get $sum)
              (i64.load (i32.add (i32.const 65536) (local.get $i)))))
            (local.set $i (i32.add (local.get $i) (i32.const 8)))
            (br $word)))
        (block $bytes
          (loop $byte
            (br_if $bytes (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $sum (i64.add (local.get $sum)
              (i64.load8_u (i32.add (i32.const 65536) (local.get $i)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $byte)))
        (br $read)))
    (i64.store (i32.const 128) (local.get $count))
    (i64.store (i32.const 136) (local.get $sum))
    (local.set $err (call $path_open (i32.const 4) (i32.const 0) (i32.const 32) (i32.const 7)
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 64)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 100) (local.get $err)))))
    (local.set $out (i32.load (i32.const 64)))
    (i32.store (i32.const 80) (i32.const 128))
    (i32.store (i32.const 84) (i32.const 16))
    (drop (call $fd_write (local.get $out) (i32.const 80) (i32.const 1) (i32.const 96)))))
