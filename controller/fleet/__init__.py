"""The fleet: devices.yaml (and Ansible inventories), the transports (local, SSH), the device session,
the group runner, the run and its run folder, the device check and bootstrap."""
