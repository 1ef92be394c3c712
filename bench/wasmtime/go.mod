module github.com/kmeter/kmeter/bench/wasmtime

go 1.26.8

require github.com/bytecodealliance/wasmtime-go/v39 v39.0.1

require github.com/kmeter/kmeter v0.0.0

replace github.com/kmeter/kmeter => ../..
