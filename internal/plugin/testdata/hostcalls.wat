;; Uses the host imports: logs "priced", charges now() in seconds for a
;; one-record batch, and has a kmeter_on_event handler charging 7.
(module
  (import "kmeter" "log" (func $log (param i32 i32 i32)))
  (import "kmeter" "now" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 100) "priced")
  (func $one (param $amount i64) (result i64)
    (i32.store (i32.const 8192) (i32.const 0x31434d4b))
    (i32.store (i32.const 8196) (i32.const 1))
    (i64.store (i32.const 8200) (local.get $amount))
    (i64.store (i32.const 8208) (i64.const 0))
    (i64.store (i32.const 8216) (i64.const 0x525545)) ;; "EUR"
    (i64.or (i64.shl (i64.const 8192) (i64.const 32)) (i64.const 32)))
  (func (export "kmeter_abi_version") (result i32) i32.const 1)
  (func (export "kmeter_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kmeter_price") (param $in i32) (param $len i32) (result i64)
    (call $log (i32.const 1) (i32.const 100) (i32.const 6))
    (call $one (i64.div_s (call $now) (i64.const 1000000000))))
  (func (export "kmeter_on_event") (param $in i32) (param $len i32) (result i64)
    (call $one (i64.const 7))))
