package agent

import (
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/netbytes"
	"github.com/kmeter/kmeter/internal/meter/sockstate"
	"github.com/kmeter/kmeter/internal/meter/syscalls"
	"github.com/kmeter/kmeter/internal/meter/tlsmeter"
)

// Meters returns the openers of every kernel meter kmeter ships.
func Meters() []Opener {
	return []Opener{
		{Name: syscalls.Name, Counters: []string{meter.Syscalls},
			Open: func(c meter.Config) (meter.Meter, error) { return syscalls.Open(c) }},
		{Name: sockstate.Name, Counters: []string{meter.TCPConnects, meter.TCPAccepts},
			Open: func(c meter.Config) (meter.Meter, error) { return sockstate.Open(c) }},
		{Name: netbytes.Name, Counters: []string{meter.NetTxBytes, meter.NetRxBytes},
			Open: func(c meter.Config) (meter.Meter, error) { return netbytes.Open(c) }},
		{Name: tlsmeter.Name, Counters: []string{meter.TLSClientHandshakes, meter.TLSServerHandshakes},
			Open: func(c meter.Config) (meter.Meter, error) { return tlsmeter.Open(c) }},
	}
}
