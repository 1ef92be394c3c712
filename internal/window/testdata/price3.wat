;; Test pricer: 3 micro-USD per unit, vendor share floor(70%), any batch
;; size that fits its memory. Built with:
;;   wat2wasm price3.wat -o price3.wasm        (wabt 1.0.32)
(module
  (memory (export "memory") 2)
  (func (export "kmeter_abi_version") (result i32) i32.const 1)
  ;; Input batches go to the second page; charges are written from 1024.
  (func (export "kmeter_alloc") (param i32) (result i32) i32.const 65536)
  (func (export "kmeter_price") (param $in i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $amt i64) (local $out i32)
    (local.set $n (i32.load offset=4 (local.get $in)))
    (i32.store (i32.const 1024) (i32.const 0x31434d4b))
    (i32.store (i32.const 1028) (local.get $n))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        ;; quantity is at +16 of record i, records start at +16
        (local.set $amt (i64.mul (i64.const 3)
          (i64.load offset=32 (i32.add (local.get $in) (i32.mul (local.get $i) (i32.const 48))))))
        (local.set $out (i32.add (i32.const 1032) (i32.mul (local.get $i) (i32.const 24))))
        (i64.store (local.get $out) (local.get $amt))
        (i64.store offset=8 (local.get $out) (i64.div_u (i64.mul (local.get $amt) (i64.const 7)) (i64.const 10)))
        (i64.store offset=16 (local.get $out) (i64.const 0x445355))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32))
      (i64.extend_i32_u (i32.add (i32.const 8) (i32.mul (local.get $n) (i32.const 24)))))))
