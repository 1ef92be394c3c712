package tlsmeter

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror -D__TARGET_ARCH_x86 -I../../../bpf/include" -target bpfel -type tls_event -type tls_counts -type tls_stats -type bench_args -type parse_result tlsmeter ../../../bpf/tlsmeter.bpf.c
