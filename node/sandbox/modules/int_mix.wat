;; Integer work over the input: a multiply-xorshift hash with division, rotation and popcount;
;; writes the 8-byte result. For determinism tests.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $n i32) (local $i i32) (local $h i64) (local $round i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.load (i32.const 8)))
    (local.set $h (i64.const 0x9e3779b97f4a7c15))
    (loop $rounds
      (local.set $i (i32.const 0))
      (block $done
        (loop $bytes
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $h (i64.mul
            (i64.xor (local.get $h) (i64.load8_u offset=1024 (local.get $i)))
            (i64.const 0x100000001b3)))
          (local.set $h (i64.add (i64.rotl (local.get $h) (i64.const 17))
            (i64.add (i64.div_u (local.get $h) (i64.const 7)) (i64.popcnt (local.get $h)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $bytes)))
      (local.set $round (i32.add (local.get $round) (i32.const 1)))
      (br_if $rounds (i32.lt_u (local.get $round) (i32.const 100))))
    (i64.store (i32.const 16) (local.get $h))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
