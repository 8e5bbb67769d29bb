{
  "targets": [{
    "target_name": "punch_hole",
    "cflags": ["-O2", "-Wall"],
    "sources": ["punch-hole.c"]
  }]
}
