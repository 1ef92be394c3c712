;; Fixture whose ABI version is exported as a function, not a global.
(module
  (func (export "kmeter_abi_version") (result i32) i32.const 2))
