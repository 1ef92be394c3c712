;; Declares 40000 pages (2.5 GiB) of initial memory: refused at load.
(module
  (memory (export "memory") 40000)
  (func (export "kmeter_abi_version") (result i32) i32.const 1)
  (func (export "kmeter_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kmeter_price") (param i32 i32) (result i64) i64.const -1))
