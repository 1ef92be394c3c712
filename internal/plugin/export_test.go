package plugin

// Test helpers for the external test package plugin_test, whose tests use
// internal/plugin/trust (which imports this package, so they cannot live
// inside it).
var (
	ExamplePlugin = examplePlugin
	Fixture       = fixture
	QuietLogger   = quietLogger
)

// ReadFixture returns testdata/NAME.wasm, for examples.
func ReadFixture(name string) ([]byte, error) { return fixtures.ReadFile("testdata/" + name + ".wasm") }
