package limitapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/kmeter/kmeter/internal/enforce"
)

// DefaultServer is where the agent listens unless told otherwise.
const DefaultServer = "http://127.0.0.1:9477"

// Client talks to a running agent's limits API.
type Client struct {
	// Server is the agent's base URL, such as DefaultServer.
	Server string
	// Token is the bearer token (the content of the agent's --token-file).
	Token string
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
}

// StatusError is an error answer of the agent.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("agent answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Set sets tenant's limit and returns it as the agent stored it.
func (c *Client) Set(ctx context.Context, tenant string, spec enforce.Spec) (Tenant, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return Tenant{}, err
	}
	var t Tenant
	err = c.do(ctx, http.MethodPut, tenant, body, &t)
	return t, err
}

// Get returns tenant's limit, policy and enforcement counts.
func (c *Client) Get(ctx context.Context, tenant string) (Tenant, error) {
	var t Tenant
	err := c.do(ctx, http.MethodGet, tenant, nil, &t)
	return t, err
}

// Remove removes tenant's limit.
func (c *Client) Remove(ctx context.Context, tenant string) error {
	return c.do(ctx, http.MethodDelete, tenant, nil, nil)
}

func (c *Client) do(ctx context.Context, method, tenant string, body []byte, out any) error {
	if tenant == "" {
		return errors.New("tenant name is empty")
	}
	server := strings.TrimRight(c.Server, "/")
	if server == "" {
		server = DefaultServer
	}
	u := server + "/v1/limits/" + url.PathEscape(tenant)
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("limits request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("reach agent at %s: %w (is `kmeter run` running? see --server)", server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read agent answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode agent answer: %w", err)
	}
	return nil
}
