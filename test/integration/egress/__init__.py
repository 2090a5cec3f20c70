"""What the egress test imports: a CONNECT proxy (connect_proxy) and the certificates
it makes with openssl (certificates)."""
