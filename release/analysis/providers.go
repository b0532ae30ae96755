package analysis

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Source measures one metric. The runner calls it with the metric, the
// clock's now and a context bounded by the provider's timeout.
type Source interface {
	Measure(ctx context.Context, m *Metric, now time.Time) (Value, error)
}

// SourceFunc adapts a function.
type SourceFunc func(ctx context.Context, m *Metric, now time.Time) (Value, error)

// Measure calls f.
func (f SourceFunc) Measure(ctx context.Context, m *Metric, now time.Time) (Value, error) {
	return f(ctx, m, now)
}

// HTTP is the default provider set: prometheus, probe and web over client.
type HTTP struct {
	Client *http.Client // nil: a client without redirects
}

var defaultClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (h HTTP) client() *http.Client {
	if h.Client != nil {
		return h.Client
	}
	return defaultClient
}

// Measure dispatches on the metric's provider.
func (h HTTP) Measure(ctx context.Context, m *Metric, now time.Time) (Value, error) {
	switch p := m.Provider; {
	case p.Prometheus != nil:
		return h.prometheus(ctx, p.Prometheus, now)
	case p.Probe != nil:
		return h.probe(ctx, p.Probe)
	case p.Web != nil:
		return h.web(ctx, p.Web)
	}
	return Value{}, errors.New("no built-in provider configured")
}

func timeoutOf(d Duration) time.Duration {
	if d <= 0 {
		return DefaultTimeout
	}
	return d.D()
}

// getBody performs req and reads at most MaxResponseBytes of a 2xx body.
func (h HTTP) getBody(req *http.Request) ([]byte, error) {
	resp, err := h.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("request to %s failed: %w", req.URL.Redacted(), errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the response: %w", err)
	}
	if len(body) > MaxResponseBytes {
		return nil, fmt.Errorf("response body exceeds %d bytes", MaxResponseBytes)
	}
	if resp.StatusCode/100 != 2 && !(resp.StatusCode == 400 || resp.StatusCode == 422) { // Prometheus puts query errors in 400/422 bodies
		return nil, fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	if resp.StatusCode/100 != 2 {
		return body, fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	return body, nil
}

type promResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// promQuery runs an instant (or range) query and returns the values.
func (h HTTP) promQuery(ctx context.Context, p *PrometheusProvider, q string, now time.Time, useRange bool) (Value, error) {
	timeout := timeoutOf(p.Timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	form := url.Values{"query": {q}, "timeout": {timeout.String()}}
	path := "/api/v1/query"
	if useRange && p.Range != nil {
		path = "/api/v1/query_range"
		end := now
		form.Set("start", strconv.FormatFloat(float64(end.Add(-p.Range.Start.D()).UnixMilli())/1000, 'f', 3, 64))
		form.Set("end", strconv.FormatFloat(float64(end.UnixMilli())/1000, 'f', 3, 64))
		form.Set("step", strconv.FormatFloat(p.Range.Step.D().Seconds(), 'f', -1, 64))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(p.Address, "/")+path, strings.NewReader(form.Encode()))
	if err != nil {
		return Value{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	body, herr := h.getBody(req)
	if body == nil && herr != nil {
		return Value{}, herr
	}
	var r promResponse
	if err := json.Unmarshal(body, &r); err != nil {
		if herr != nil {
			return Value{}, herr
		}
		return Value{}, fmt.Errorf("prometheus answer is not JSON: %w", err)
	}
	if r.Status != "success" {
		return Value{}, fmt.Errorf("prometheus %s: %s", clip(r.ErrorType, 40), clip(r.Error, 200))
	}
	if herr != nil {
		return Value{}, herr
	}
	return parsePromResult(r.Data.ResultType, r.Data.Result)
}

func parsePromResult(typ string, raw json.RawMessage) (Value, error) {
	sample := func(pair []json.RawMessage) (float64, error) {
		if len(pair) != 2 {
			return 0, errors.New("malformed sample")
		}
		var s string
		if err := json.Unmarshal(pair[1], &s); err != nil {
			return 0, errors.New("malformed sample value")
		}
		return parseFloat(s)
	}
	switch typ {
	case "scalar":
		var pair []json.RawMessage
		if err := json.Unmarshal(raw, &pair); err != nil {
			return Value{}, errors.New("malformed scalar")
		}
		f, err := sample(pair)
		return Value{Values: []float64{f}, Samples: -1}, err
	case "vector":
		var series []struct {
			Value []json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(raw, &series); err != nil {
			return Value{}, errors.New("malformed vector")
		}
		if len(series) > MaxResultValues {
			return Value{}, fmt.Errorf("vector of %d series exceeds %d", len(series), MaxResultValues)
		}
		v := Value{IsVector: true, Samples: -1, Values: []float64{}}
		for _, s := range series {
			f, err := sample(s.Value)
			if err != nil {
				return Value{}, err
			}
			v.Values = append(v.Values, f)
		}
		return v, nil
	case "matrix":
		var series []struct {
			Values [][]json.RawMessage `json:"values"`
		}
		if err := json.Unmarshal(raw, &series); err != nil {
			return Value{}, errors.New("malformed matrix")
		}
		v := Value{IsVector: true, Samples: -1, Values: []float64{}}
		for _, s := range series {
			for _, pair := range s.Values {
				if len(v.Values) >= MaxResultValues {
					return Value{}, fmt.Errorf("matrix exceeds %d values", MaxResultValues)
				}
				f, err := sample(pair)
				if err != nil {
					return Value{}, err
				}
				v.Values = append(v.Values, f)
			}
		}
		return v, nil
	}
	return Value{}, fmt.Errorf("unsupported result type %.20q", typ)
}

// parseFloat parses Prometheus' sample strings, including NaN and ±Inf
// (which the engine then treats as no data).
func parseFloat(s string) (float64, error) {
	switch s {
	case "NaN":
		return math.NaN(), nil
	case "+Inf", "Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("sample value %.40q is not a number", s)
	}
	return f, nil
}

func (h HTTP) prometheus(ctx context.Context, p *PrometheusProvider, now time.Time) (Value, error) {
	v, err := h.promQuery(ctx, p, p.Query, now, true)
	if err != nil {
		return Value{}, err
	}
	if p.CountQuery == "" {
		return v, nil
	}
	c, err := h.promQuery(ctx, p, p.CountQuery, now, false)
	if err != nil {
		return Value{}, fmt.Errorf("countQuery: %w", err)
	}
	switch {
	case len(c.Values) == 0:
		v.Samples = 0 // no series: no traffic
	case len(c.Values) > 1:
		return Value{}, fmt.Errorf("countQuery returned %d series, want one", len(c.Values))
	case !finite(c.Values[0]) || c.Values[0] < 0:
		v.Samples = 0
	default:
		v.Samples = int64(math.Min(c.Values[0], maxMinSamples))
	}
	return v, nil
}

func (h HTTP) probe(ctx context.Context, p *ProbeProvider) (Value, error) {
	ctx, cancel := context.WithTimeout(ctx, timeoutOf(p.Timeout))
	defer cancel()
	u := strings.TrimRight(p.Address, "/") + "/v1/verdicts/" + url.PathEscape(p.Flow) + "?window=" + url.QueryEscape(p.Window)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Value{}, err
	}
	body, err := h.getBody(req)
	if err != nil {
		return Value{}, err
	}
	var v struct {
		Verdict string `json:"verdict"`
		Runs    int64  `json:"runs"`
		Reason  string `json:"reason"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return Value{}, fmt.Errorf("probe answer is not a verdict: %w", err)
	}
	switch v.Verdict {
	case "pass":
		return Value{Values: []float64{1}, Samples: v.Runs}, nil
	case "fail":
		return Value{Values: []float64{0}, Samples: v.Runs}, nil
	case "inconclusive":
		return Value{Samples: v.Runs, NoData: "probe verdict inconclusive: " + clip(v.Reason, 150)}, nil
	}
	return Value{}, fmt.Errorf("probe verdict %.20q is not pass, fail or inconclusive", v.Verdict)
}

func (h HTTP) web(ctx context.Context, w *WebProvider) (Value, error) {
	ctx, cancel := context.WithTimeout(ctx, timeoutOf(w.Timeout))
	defer cancel()
	method := w.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if w.Body != "" {
		body = bytes.NewReader([]byte(w.Body))
	}
	req, err := http.NewRequestWithContext(ctx, method, w.URL, body)
	if err != nil {
		return Value{}, errors.New("bad web request")
	}
	for k, v := range w.Headers {
		req.Header.Set(k, v)
	}
	raw, err := h.getBody(req)
	if err != nil {
		return Value{}, err
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return Value{}, errors.New("web response is not JSON")
	}
	path, _ := parseJSONPath(w.JSONPath)
	v, err := selectValue(doc, path)
	if err != nil {
		return Value{}, err
	}
	v.Samples = -1
	if w.SamplesJSONPath != "" {
		sp, _ := parseJSONPath(w.SamplesJSONPath)
		s, err := selectValue(doc, sp)
		if err != nil {
			return Value{}, fmt.Errorf("samples: %w", err)
		}
		if len(s.Values) == 1 && finite(s.Values[0]) && s.Values[0] >= 0 {
			v.Samples = int64(math.Min(s.Values[0], maxMinSamples))
		} else {
			v.Samples = 0
		}
	}
	return v, nil
}

type pathSeg struct {
	key   string
	index int // -1: key
}

// parseJSONPath parses the subset $.a.b[0]["c"] (keys and indices).
func parseJSONPath(p string) ([]pathSeg, error) {
	if !strings.HasPrefix(p, "$") || len(p) > 512 {
		return nil, errors.New("must start with $ (e.g. $.data.value) and be at most 512 bytes")
	}
	var segs []pathSeg
	s := p[1:]
	for s != "" {
		if len(segs) >= maxJSONPathSegments {
			return nil, fmt.Errorf("more than %d segments", maxJSONPathSegments)
		}
		switch s[0] {
		case '.':
			s = s[1:]
			i := strings.IndexAny(s, ".[")
			if i < 0 {
				i = len(s)
			}
			if i == 0 {
				return nil, errors.New("empty key")
			}
			segs = append(segs, pathSeg{key: s[:i], index: -1})
			s = s[i:]
		case '[':
			j := strings.IndexByte(s, ']')
			if j < 0 {
				return nil, errors.New("unclosed [")
			}
			in := s[1:j]
			s = s[j+1:]
			if len(in) >= 2 && (in[0] == '"' || in[0] == '\'') && in[len(in)-1] == in[0] {
				segs = append(segs, pathSeg{key: in[1 : len(in)-1], index: -1})
				continue
			}
			n, err := strconv.Atoi(in)
			if err != nil || n < 0 {
				return nil, errors.New("an index must be a non-negative integer or a quoted key")
			}
			segs = append(segs, pathSeg{index: n})
		default:
			return nil, errors.New("expected . or [")
		}
	}
	return segs, nil
}

// selectValue walks the path. A missing key, an index out of range or null
// is no data (Inconclusive), never an error and never 0.
func selectValue(doc any, path []pathSeg) (Value, error) {
	cur := doc
	for _, seg := range path {
		switch c := cur.(type) {
		case map[string]any:
			if seg.index >= 0 {
				return Value{NoData: "jsonPath index on an object"}, nil
			}
			v, ok := c[seg.key]
			if !ok {
				return Value{NoData: "jsonPath selects nothing"}, nil
			}
			cur = v
		case []any:
			if seg.index < 0 || seg.index >= len(c) {
				return Value{NoData: "jsonPath selects nothing"}, nil
			}
			cur = c[seg.index]
		default:
			return Value{NoData: "jsonPath selects nothing"}, nil
		}
	}
	if arr, ok := cur.([]any); ok {
		if len(arr) > MaxResultValues {
			return Value{}, fmt.Errorf("result list exceeds %d values", MaxResultValues)
		}
		v := Value{IsVector: true, Values: []float64{}}
		for _, e := range arr {
			f, nd, err := scalar(e)
			if err != nil {
				return Value{}, err
			}
			if nd != "" {
				return Value{NoData: nd}, nil
			}
			v.Values = append(v.Values, f)
		}
		return v, nil
	}
	f, nd, err := scalar(cur)
	if err != nil || nd != "" {
		return Value{NoData: nd}, err
	}
	return Value{Values: []float64{f}}, nil
}

func scalar(e any) (float64, string, error) {
	switch x := e.(type) {
	case nil:
		return 0, "result is null", nil
	case json.Number:
		f, err := strconv.ParseFloat(x.String(), 64)
		if err != nil {
			return 0, "", errors.New("result number out of range")
		}
		return f, "", nil
	case bool:
		if x {
			return 1, "", nil
		}
		return 0, "", nil
	case string:
		f, err := parseFloat(x)
		if err != nil {
			return 0, "", errors.New("result string is not a number")
		}
		return f, "", nil
	}
	return 0, "", errors.New("result is not a number, boolean or list")
}
