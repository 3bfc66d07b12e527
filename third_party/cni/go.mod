module github.com/containernetworking/cni

go 1.21
