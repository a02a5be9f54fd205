;; Hostile: grows memory a page at a time until refused, then aborts as an allocator would.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
