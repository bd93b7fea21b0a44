package certs

import (
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
