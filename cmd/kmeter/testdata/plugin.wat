;; Small plugin fixture: one import, an exported memory, a function and the
;; ABI version as an exported i32 global.
(module
  (import "kmeter" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (global (export "kmeter_abi_version") i32 (i32.const 1))
  (func (export "price") (param i64) (result i64)
    local.get 0
    i64.const 3
    i64.mul))
