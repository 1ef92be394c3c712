;; Claims 2 GiB of output when record 0 has quantity >= 1000.
(module
  (memory (export "memory") 1)
  (func (export "kmeter_abi_version") (result i32) i32.const 1)
  (func (export "kmeter_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kmeter_price") (param $in i32) (param $len i32) (result i64)
    (if (i64.ge_u (i64.load offset=32 (local.get $in)) (i64.const 1000))
      (then (return (i64.const 0x7fffffff))))
    (i32.store (i32.const 8192) (i32.const 0x31434d4b))
    (i32.store (i32.const 8196) (i32.const 1))
    (i64.store (i32.const 8216) (i64.const 0x445355))
    (i64.or (i64.shl (i64.const 8192) (i64.const 32)) (i64.const 32))))
