package actuator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// WebhookConfig configures the webhook actuator: each call is a POST of
// WebhookPayload as JSON to URL; any 2xx answer is success.
type WebhookConfig struct {
	URL     string
	Timeout time.Duration // the whole request; 10s when 0
	Client  *http.Client  // optional (e.g. with TLS settings); redirects are never followed
}

// WebhookPayload is the JSON body of a webhook call.
type WebhookPayload struct {
	Domain string `json:"domain"`
	Epoch  uint64 `json:"epoch"`
	Canary string `json:"canary"`
	Weight uint32 `json:"weight"`
}

// ErrWebhook: the webhook failed or answered non-2xx.
var ErrWebhook = errors.New("actuator: webhook")

const (
	maxWebhookAnswer = 64 << 10 // read (and discarded) at most
	maxWebhookQuote  = 512      // quoted in an error
)

// Webhook POSTs each call.
type Webhook struct {
	cfg    WebhookConfig
	client *http.Client
}

// NewWebhook checks the config.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(cfg.URL) > 2048 {
		return nil, errors.New("actuator: webhook: URL must be an absolute http(s) URL of at most 2048 bytes")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	c := &http.Client{}
	if cfg.Client != nil {
		cc := *cfg.Client
		c = &cc
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Webhook{cfg: cfg, client: c}, nil
}

// SetWeight POSTs c.
func (w *Webhook) SetWeight(ctx context.Context, c Call) error {
	if err := c.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	body, err := json.Marshal(WebhookPayload{Domain: c.Domain, Epoch: c.Epoch, Canary: c.Canary, Weight: c.Weight})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrWebhook, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error quotes the URL; it is configuration, not a secret holder
		// by contract (put credentials in headers of a configured Client).
		return fmt.Errorf("%w: %w", ErrWebhook, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxWebhookAnswer))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: status %d: %q", ErrWebhook, resp.StatusCode, truncate(bytes.ToValidUTF8(bytes.TrimSpace(b), []byte("?")), maxWebhookQuote))
	}
	return nil
}
