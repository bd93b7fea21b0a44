package e2e

import (
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
