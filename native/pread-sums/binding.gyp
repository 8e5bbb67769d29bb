{
  "targets": [{
    "target_name": "pread_sums",
    "cflags": ["-O2", "-Wall"],
    "sources": ["pread-sums.c"]
  }]
}
