;; Reads nothing, writes a Python-like error to stderr and ends itself with exit status 1:
;; a job that "raises", in WebAssembly, for tests that must not compile CPython.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Traceback (most recent call last):\0a  File \"job.py\", line 3\0aValueError: bad input line 3\0a")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))   ;; iovec: base
    (i32.store (i32.const 4) (i32.const 88))   ;; iovec: length
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $exit (i32.const 1))))
