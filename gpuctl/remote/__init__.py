"""Everything gpuctl does on a machine over SSH (paramiko): session, sync, tail, GPU meters."""
