//go:build failpoints

package failpoint

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestArmAndEval(t *testing.T) {
	if err := Arm(PromoteValidating + "=error"); err != nil {
		t.Fatal(err)
	}
	if err := Eval(PromoteValidating); !errors.Is(err, ErrInjected) {
		t.Fatalf("armed error: %v", err)
	}
	if err := Arm(PromoteValidating + "=off"); err != nil {
		t.Fatal(err)
	}
	if err := Eval(PromoteValidating); err != nil {
		t.Fatalf("disarmed: %v", err)
	}
	if Hits()[PromoteValidating] != 2 {
		t.Fatalf("hits %v", Hits())
	}
	// 3*error passes twice and fires on the third hit.
	if err := Arm(PromoteReceived + "=3*error"); err != nil {
		t.Fatal(err)
	}
	base := Hits()[PromoteReceived]
	var fired []int
	for i := 1; i <= 4; i++ {
		if Eval(PromoteReceived) != nil {
			fired = append(fired, base+i)
		}
	}
	if len(fired) != 2 || fired[0] != 3 {
		t.Fatalf("fired on hits %v", fired)
	}
	Arm(PromoteReceived + "=off")
	start := time.Now()
	Arm(SnapshotBeforePersist + "=sleep(20)")
	Eval(SnapshotBeforePersist)
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("sleep action did not sleep")
	}
	Arm(SnapshotBeforePersist + "=off")
}

func TestArmRejectsBadSpecs(t *testing.T) {
	for _, spec := range []string{"nope=kill", PromoteReceived + "=explode", PromoteReceived + "=sleep(x)", PromoteReceived + "=0*kill", "no-equals"} {
		if err := Arm(spec); err == nil {
			t.Errorf("%q accepted", spec)
		}
	}
}

func TestHandlerIsLoopbackOnly(t *testing.T) {
	h := Handler()
	req := httptest.NewRequest(http.MethodPost, "/debug/failpoints", strings.NewReader(PromoteValidating+"=error"))
	req.RemoteAddr = "10.1.2.3:5555"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("remote caller got %d", rec.Code)
	}
	req.RemoteAddr = "127.0.0.1:5555"
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(PromoteValidating+"=error")))
	req = httptest.NewRequest(http.MethodGet, "/debug/failpoints", nil)
	req.RemoteAddr = "127.0.0.1:5555"
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"hits"`) {
		t.Fatalf("loopback GET: %d %s", rec.Code, rec.Body)
	}
	Arm(PromoteValidating + "=off")
}
