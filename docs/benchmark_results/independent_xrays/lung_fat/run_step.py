"""sopi's CLI with sopi.registration.register at step_mm=argv[1] (every level's planes scaled alike; the benchmark
imports it when it runs)."""
import sys, functools
step = float(sys.argv.pop(1))
import sopi.registration as registration
registration.register = functools.partial(registration.register, step_mm=step)
from sopi.cli import main
sys.exit(main(sys.argv[1:]))
