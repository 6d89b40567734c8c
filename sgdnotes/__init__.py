"""sgdnotes: simulators and checks behind the book "Beyond Langevin"."""
