{
  "targets": [{
    "target_name": "sd_notify",
    "cflags": ["-O2", "-Wall"],
    "sources": ["sd-notify.c"],
    "libraries": ["<!@(pkg-config --libs libsystemd)"]
  }]
}
