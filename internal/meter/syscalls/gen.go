package syscalls

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -mcpu=v3 -g -Wall -Werror -D__TARGET_ARCH_x86 -I../../../bpf/include" -target bpfel -type kmeter_key -type sys_dropped -type sys_nrs -type sys_rec syscalls ../../../bpf/syscalls.bpf.c
