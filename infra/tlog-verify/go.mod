module pcvhub/infra/tlog-verify

go 1.26.0

require (
	github.com/cloudflare/circl v1.6.5
	github.com/transparency-dev/merkle v0.0.2
	golang.org/x/mod v0.43.0
)

require golang.org/x/sys v0.47.0 // indirect
