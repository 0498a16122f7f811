from pagerace.harness.program import run

run()
