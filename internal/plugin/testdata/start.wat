;; Has a start function, which would run before the ABI check: refused.
(module
  (memory (export "memory") 1)
  (func $boom unreachable)
  (start $boom)
  (func (export "kmeter_abi_version") (result i32) i32.const 1)
  (func (export "kmeter_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kmeter_price") (param i32 i32) (result i64) i64.const -1))
