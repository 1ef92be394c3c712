package enforce_test

import (
	"fmt"

	"github.com/kmeter/kmeter/internal/enforce"
)

func ExampleSpec_Parse() {
	l, err := enforce.Spec{Egress: "10MiB/s", ConnectRate: "100/s"}.Parse()
	if err != nil {
		panic(err)
	}
	fmt.Println(l.Egress, l.EgressBurst, l.ConnectRate, l.ConnectBurst)

	_, err = enforce.Spec{Egress: "-5MiB/s"}.Parse()
	fmt.Println(err)
	// Output:
	// 10485760 1048576 100 100
	// egress: rate "-5MiB/s" is negative: a rate must be positive (remove the limit to make it unlimited)
}

func ExampleDecide() {
	rule := enforce.QuotaRule{Prepaid: true, OnEmpty: enforce.Policy{Kind: enforce.PolicyFloorBandwidth, Floor: 128 << 10}}
	fmt.Println(enforce.Decide(rule, enforce.QuotaState{BalanceMicro: 2_500_000}))
	fmt.Println(enforce.Decide(rule, enforce.QuotaState{BalanceMicro: 0}))
	// Output:
	// { 0}
	// {floor_bandwidth 131072}
}
