;; Prices record 0 at its quantity q in micro-USD, computed by recursing
;; q calls deep (legitimate recursion). From q >= 1000000 on it calls
;; $fan 40: 2^40 calls that never nest deeper than 41 and contain no loop,
;; so only a deadline check at function entry can stop it.
(module
  (memory (export "memory") 1)
  (func $down (param i64) (result i64)
    (if (result i64) (i64.eqz (local.get 0))
      (then (i64.const 0))
      (else (i64.add (call $down (i64.sub (local.get 0) (i64.const 1))) (i64.const 1)))))
  (func $fan (param i64) (result i64)
    (if (result i64) (i64.eqz (local.get 0))
      (then (i64.const 1))
      (else (i64.add (call $fan (i64.sub (local.get 0) (i64.const 1)))
                     (call $fan (i64.sub (local.get 0) (i64.const 1)))))))
  (func (export "kmeter_abi_version") (result i32) i32.const 1)
  (func (export "kmeter_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kmeter_price") (param $in i32) (param $len i32) (result i64)
    (local $q i64)
    (local.set $q (i64.load offset=32 (local.get $in)))
    (if (i64.ge_u (local.get $q) (i64.const 1000000))
      (then (i64.store (i32.const 8200) (call $fan (i64.const 40))))
      (else (i64.store (i32.const 8200) (call $down (local.get $q)))))
    (i32.store (i32.const 8192) (i32.const 0x31434d4b))
    (i32.store (i32.const 8196) (i32.const 1))
    (i64.store (i32.const 8216) (i64.const 0x445355))
    (i64.or (i64.shl (i64.const 8192) (i64.const 32)) (i64.const 32))))
