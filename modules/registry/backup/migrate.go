package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Report is what Migrate did.
type Report struct {
	// Source and Target are the trailers of the source's export and of
	// the target's export after the copy: equal when verified.
	Source, Target Trailer
	// Inserted counts the rows the copy wrote; fewer than the source's
	// when a previous run had copied the rest.
	Inserted registry.Counts
}

// Migrate copies the registry in from into to through the export format,
// then exports to and compares counts and checksum with the source. A
// target that holds rows is refused unless opts.Force; with Force, rows
// already there are kept, so an interrupted migration is resumed by
// running it again. Stop writes to the source (stop the cloud, or keep
// it in maintenance) for the copy to verify: a gateway that pings during
// the copy differs in its last ping.
func Migrate(ctx context.Context, from, to registry.BackupStore, opts ImportOptions) (Report, error) {
	var rep Report
	pr, pw := io.Pipe()
	var (
		wg        sync.WaitGroup
		exportErr error
	)
	wg.Go(func() {
		rep.Source, exportErr = Export(ctx, from, pw)
		pw.CloseWithError(exportErr)
	})
	_, inserted, err := Import(ctx, to, pr, opts)
	// Unblocks the exporter if the import stopped first.
	pr.CloseWithError(errors.New("import stopped"))
	wg.Wait()
	rep.Inserted = inserted
	if exportErr != nil {
		return rep, fmt.Errorf("read the source: %w", exportErr)
	}
	if err != nil {
		return rep, fmt.Errorf("write the target: %w", err)
	}
	rep.Target, err = Export(ctx, to, io.Discard)
	if err != nil {
		return rep, fmt.Errorf("verify the target: %w", err)
	}
	if rep.Target.Counts != rep.Source.Counts || rep.Target.Checksum != rep.Source.Checksum {
		return rep, fmt.Errorf("%w: source %+v checksum %s, target %+v checksum %s", ErrMismatch,
			rep.Source.Counts, rep.Source.Checksum, rep.Target.Counts, rep.Target.Checksum)
	}
	return rep, nil
}
