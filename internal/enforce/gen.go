package enforce

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -mcpu=v3 -g -Wall -Werror -D__TARGET_ARCH_x86 -I../../bpf/include" -target bpfel -type rate -type tenant_limits -type bucket_key -type tbucket -type counter_key -type slice_key -type slice_port -type slice_val -type slice_counts -type host_settings limiter ../../bpf/limiter.bpf.c
