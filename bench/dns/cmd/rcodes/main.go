// Command rcodes asks a DNS server each question of a dnsperf query file
// over UDP, one at a time, and prints per question the rcode and whether
// the answer section holds records ("NOERROR/data", "NOERROR/nodata",
// "NXDOMAIN"...), so that the benchmark can check that every server it
// compares does the same work before it measures them.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func main() {
	addr := flag.String("server", "127.0.0.1:5300", "server address")
	file := flag.String("queries", "queries.txt", "dnsperf query file")
	n := flag.Int("n", 300, "questions to ask, from the start of the file")
	flag.Parse()
	f, err := os.Open(*file)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	w := bufio.NewWriter(os.Stdout)
	sc := bufio.NewScanner(f)
	for i := 0; i < *n && sc.Scan(); i++ {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			log.Fatalf("line %d: want NAME TYPE", i+1)
		}
		t, ok := dns.StringToType[fields[1]]
		if !ok {
			log.Fatalf("line %d: unknown type %q", i+1, fields[1])
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(fields[0]), t)
		m.SetEdns0(1232, false)
		var r *dns.Msg
		for try := 0; try < 3; try++ {
			if r, _, err = c.Exchange(m, *addr); err == nil {
				break
			}
		}
		if err != nil {
			log.Fatalf("%s %s: %v", fields[0], fields[1], err)
		}
		kind := "nodata"
		if len(r.Answer) > 0 {
			kind = "data"
		}
		if r.Rcode != dns.RcodeSuccess {
			kind = ""
		}
		fmt.Fprintf(w, "%s %s %s/%s\n", fields[0], fields[1], dns.RcodeToString[r.Rcode], kind)
	}
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
}
