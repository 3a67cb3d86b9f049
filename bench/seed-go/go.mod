module vigil.local/bench/seed-go

go 1.25
