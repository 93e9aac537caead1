{ "targets": [ { "target_name": "origdst", "sources": [ "origdst.c" ] } ] }
