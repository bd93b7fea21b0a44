// Command demo is the small web app the quickstart puts behind the gateway
// agent: one page that shows how the request arrived (the original client
// address the agent passed in X-Forwarded-For, the host name, the scheme),
// so that a curl through the tunnel shows the whole path.
//
// It is a demonstration only, listening on loopback.
package main

import (
	"context"
	"flag"
	"fmt"
	"html"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:18081", "address to listen on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html>
<title>Hello from your gateway</title>
<h1>Hello from your gateway</h1>
<p>This page comes from the gateway's own web app, through the Gatehouse agent.</p>
<ul>
<li>host: %s</li>
<li>original client (X-Forwarded-For): %s</li>
<li>scheme seen by the agent (X-Forwarded-Proto): %s</li>
<li>time: %s</li>
</ul>
`, html.EscapeString(r.Host), html.EscapeString(r.Header.Get("X-Forwarded-For")),
			html.EscapeString(r.Header.Get("X-Forwarded-Proto")), time.Now().Format(time.RFC3339))
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Stop on Ctrl-C or the quickstart's kill, whatever the shell did
	// with the signals of background jobs.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.Printf("demo app on http://%s", *addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
