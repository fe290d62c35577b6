"""Running code as the target's CPU runs it: qemu-user, foreign Debian roots, interpreters."""
