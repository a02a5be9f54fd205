;; Hostile: asks for arguments, environment, preopened folders, a file, a socket, the clock and
;; randomness, and writes what it got as little-endian words to stdout:
;; argc, environ count, fd_prestat_get(3) errno, path_open errno, sock_accept errno,
;; fd_write(5) errno, clock_time_get errno, the clock as i64, random_get errno, 16 random bytes.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 2048) "/etc/passwd")
  (func (export "_start")
    (drop (call $args (i32.const 1024) (i32.const 1100)))
    (drop (call $env (i32.const 1028) (i32.const 1100)))
    (i32.store (i32.const 1032) (call $prestat (i32.const 3) (i32.const 1100)))
    (i32.store (i32.const 1036)
      (call $open (i32.const 3) (i32.const 0) (i32.const 2048) (i32.const 11) (i32.const 0)
        (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 1100)))
    (i32.store (i32.const 1040) (call $accept (i32.const 3) (i32.const 0) (i32.const 1100)))
    (i32.store (i32.const 0) (i32.const 2048))
    (i32.store (i32.const 4) (i32.const 11))
    (i32.store (i32.const 1044) (call $fd_write (i32.const 5) (i32.const 0) (i32.const 1) (i32.const 1100)))
    (i32.store (i32.const 1048) (call $clock (i32.const 0) (i64.const 1) (i32.const 1052)))
    (i32.store (i32.const 1060) (call $random (i32.const 1064) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 56))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
