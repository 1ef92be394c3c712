package sign_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/kmeter/kmeter/internal/plugin/sign"
)

func Example() {
	module, _ := os.ReadFile("testdata/plugin.wasm") // wat2wasm testdata/plugin.wat
	publisher, _ := sign.GenerateKey(nil)

	signed, err := sign.Sign(module, publisher)
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := sign.Verify(signed, []sign.PublicKey{publisher.Public()})
	fmt.Println("valid:", err == nil, "signer matches:", res.Signer.Equal(publisher.Public()))

	signed[len(signed)-1] ^= 1 // one flipped bit in the code section
	_, err = sign.Verify(signed, []sign.PublicKey{publisher.Public()})
	fmt.Println("tampered refused:", errors.Is(err, sign.ErrBadSignature))

	stranger, _ := sign.GenerateKey(nil)
	_, err = sign.Verify(signed, []sign.PublicKey{stranger.Public()})
	fmt.Println("unknown key refused:", err != nil)
	// Output:
	// valid: true signer matches: true
	// tampered refused: true
	// unknown key refused: true
}
