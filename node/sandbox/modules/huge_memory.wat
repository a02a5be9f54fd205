;; Hostile: declares a 4 GiB minimum memory.
(module
  (memory (export "memory") 65536)
  (func (export "_start")))
