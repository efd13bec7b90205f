module wagi-go

go 1.21
