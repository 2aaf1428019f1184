// Guest entry point: placeholder until the sandbox launcher lands.
process.exitCode = 1;
