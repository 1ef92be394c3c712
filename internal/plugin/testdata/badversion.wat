;; Speaks ABI version 2.
(module
  (memory (export "memory") 1)
  (func (export "kmeter_abi_version") (result i32) i32.const 2)
  (func (export "kmeter_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kmeter_price") (param i32 i32) (result i64) i64.const -1))
