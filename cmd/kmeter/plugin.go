package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/plugin/licence"
	"github.com/kmeter/kmeter/internal/plugin/sign"
	"github.com/kmeter/kmeter/internal/plugin/trust"
)

// Exit codes of `kmeter plugin verify`.
const (
	exitInvalid = 1 // the module is refused
	exitTrouble = 2 // the check could not run (unreadable file, bad key...)
)

func newPluginCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plugin",
		Short: "Sign, verify and inspect Wasm pricing plugins",
		Long: "Plugins are signed in the WebAssembly tool-conventions signature format (the one wasmsign2 uses):\n" +
			"Ed25519 over the SHA-256 of the module, in a first custom section named \"signature\". See docs/signing.md.",
	}
	cmd.AddCommand(newPluginKeygenCmd(), newPluginSignCmd(), newPluginVerifyCmd(), newPluginInspectCmd())
	return cmd
}

func newPluginKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out NAME",
		Short: "Create a publisher key pair: NAME.key (secret) and NAME.pub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("keygen: --out NAME is required")
			}
			k, err := sign.GenerateKey(nil)
			if err != nil {
				return err
			}
			keyPath, pubPath, err := sign.WriteKeyFiles(out, k)
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "secret key: %s (keep it secret)\npublic key: %s\nsigner:     %s\nkey id:     %x\n",
				keyPath, pubPath, k.Public(), k.Public().KeyID())
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "base name of the key files to create")
	return cmd
}

func newPluginSignCmd() *cobra.Command {
	var keyPath, licPath, out string
	cmd := &cobra.Command{
		Use:   "sign --key NAME.key [--licence FILE] --out SIGNED.wasm IN.wasm",
		Short: "Embed an optional licence and sign a module",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			if keyPath == "" {
				errs = append(errs, errors.New("--key NAME.key is required"))
			}
			if out == "" {
				errs = append(errs, errors.New("--out SIGNED.wasm is required"))
			}
			if err := errors.Join(errs...); err != nil {
				return fmt.Errorf("sign: %w", err)
			}
			k, err := sign.ReadKeyPairFile(keyPath)
			if err != nil {
				return fmt.Errorf("sign: %w", err)
			}
			module, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("sign: %w", err)
			}
			if licPath != "" {
				l, err := licence.ReadFile(licPath)
				if err != nil {
					return fmt.Errorf("sign: %w", err)
				}
				if module, err = licence.Embed(module, l); err != nil {
					return fmt.Errorf("sign %s: %w", args[0], err)
				}
			}
			signed, err := sign.Sign(module, k)
			if err != nil {
				return fmt.Errorf("sign %s: %w", args[0], err)
			}
			if err := os.WriteFile(out, signed, 0o644); err != nil {
				return fmt.Errorf("sign: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s -> %s\nsha256: %s\nsigner: %s\n", args[0], out, plugin.SHA256Hex(signed), k.Public())
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "publisher key pair (NAME.key from keygen)")
	cmd.Flags().StringVar(&licPath, "licence", "", "licence JSON to embed (see docs/signing.md)")
	cmd.Flags().StringVar(&out, "out", "", "signed module to write")
	return cmd
}

func newPluginVerifyCmd() *cobra.Command {
	var cfg trust.Config
	var pubs []string
	cmd := &cobra.Command{
		Use:   "verify --pub NAME.pub SIGNED.wasm",
		Short: "Check a module as the agent would before loading it (exit 0 valid, 1 invalid, 2 could not check)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, p := range pubs {
				k, err := sign.ReadPublicKeyFile(p)
				if err != nil {
					return &exitError{code: exitTrouble, err: err}
				}
				cfg.Keys = append(cfg.Keys, k)
			}
			if len(cfg.Keys) == 0 && cfg.KeysDir == "" {
				return &exitError{code: exitTrouble, err: errors.New("verify: give the publisher key with --pub NAME.pub or a --keys-dir")}
			}
			v, err := trust.New(cfg)
			if err != nil {
				return &exitError{code: exitTrouble, err: err}
			}
			module, err := os.ReadFile(args[0])
			if err != nil {
				return &exitError{code: exitTrouble, err: fmt.Errorf("verify: %w", err)}
			}
			id, err := v.Verify(cmd.Context(), module)
			if err != nil {
				return &exitError{code: exitInvalid, err: fmt.Errorf("%s: invalid: %w", args[0], err)}
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: valid\nsha256:  %s\nsigner:  %s\n", args[0], id.SHA256, id.Signer)
			if l, ok := id.Licence.(licence.Licence); ok {
				printLicence(w, l)
			} else {
				fmt.Fprintln(w, "licence: none")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&pubs, "pub", nil, "trusted publisher public key (NAME.pub); repeatable")
	f.StringVar(&cfg.KeysDir, "keys-dir", "", "directory of trusted *.pub keys")
	f.StringVar(&cfg.HostID, "host-id", "", "host id licences must list (default: read --host-id-file)")
	f.StringVar(&cfg.HostIDFile, "host-id-file", licence.DefaultHostIDFile, "file holding the host id")
	f.StringVar(&cfg.RevocationFile, "revocations", "", "revocation list (lines `key HEX` / `sha256 HEX`)")
	f.BoolVar(&cfg.RequireLicence, "require-licence", false, "refuse modules without a licence")
	return cmd
}

func newPluginInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE.wasm",
		Short: "Show a module's exports, imports, ABI version, signature and licence (verifies nothing)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			module, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("inspect: %w", err)
			}
			info, err := sign.Inspect(module)
			if err != nil {
				return fmt.Errorf("inspect %s: %w", args[0], err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "file:    %s (%d bytes)\nsha256:  %s\n", args[0], len(module), plugin.SHA256Hex(module))
			switch ids, err := sign.Signers(module); {
			case errors.Is(err, sign.ErrUnsigned):
				fmt.Fprintln(w, "signed:  no")
			case err != nil:
				fmt.Fprintf(w, "signed:  malformed signature section: %v\n", err)
			default:
				hexIDs := make([]string, len(ids))
				for i, id := range ids {
					hexIDs[i] = hex.EncodeToString(id)
					if len(id) == 0 {
						hexIDs[i] = "(no key id)"
					}
				}
				fmt.Fprintf(w, "signed:  yes, key id %s (not verified; use `kmeter plugin verify --pub`)\n", strings.Join(hexIDs, ", "))
			}
			switch l, ok, err := licence.Extract(module); {
			case err != nil:
				fmt.Fprintf(w, "licence: malformed: %v\n", err)
			case !ok:
				fmt.Fprintln(w, "licence: none")
			default:
				printLicence(w, l)
			}
			switch {
			case !info.ABI.Present:
				fmt.Fprintf(w, "abi:     missing (no %s export)\n", sign.ABIExport)
			case info.ABI.Known:
				fmt.Fprintf(w, "abi:     %d (global %s)\n", info.ABI.Value, sign.ABIExport)
			case info.ABI.Kind == sign.KindFunc:
				fmt.Fprintf(w, "abi:     %s is a function; its value is known only by calling it\n", sign.ABIExport)
			default:
				fmt.Fprintf(w, "abi:     %s is a %s whose value is not a constant\n", sign.ABIExport, sign.KindName(info.ABI.Kind))
			}
			fmt.Fprintf(w, "imports: %d\n", len(info.Imports))
			for _, im := range info.Imports {
				fmt.Fprintf(w, "  %-6s %s.%s\n", sign.KindName(im.Kind), im.Module, im.Name)
			}
			fmt.Fprintf(w, "exports: %d\n", len(info.Exports))
			for _, e := range info.Exports {
				fmt.Fprintf(w, "  %-6s %s\n", sign.KindName(e.Kind), e.Name)
			}
			custom := "none"
			if len(info.CustomSections) > 0 {
				custom = strings.Join(info.CustomSections, ", ")
			}
			fmt.Fprintf(w, "custom sections: %s\n", custom)
			return nil
		},
	}
}

func printLicence(w io.Writer, l licence.Licence) {
	hosts := "any"
	if len(l.Hosts) > 0 {
		hosts = strings.Join(l.Hosts, ", ")
	}
	calls := "unlimited"
	if l.MaxCalls > 0 {
		calls = fmt.Sprint(l.MaxCalls)
	}
	fmt.Fprintf(w, "licence: publisher %q, licensee %q, not after %s, hosts %s, max calls %s\n",
		l.Publisher, l.Licensee, l.NotAfter.UTC().Format(time.RFC3339), hosts, calls)
}
