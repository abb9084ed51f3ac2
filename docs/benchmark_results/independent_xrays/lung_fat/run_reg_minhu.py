"""sopi's CLI with the registration's DRR (sopi.render) using min_hu=argv[1]; the simulator keeps its default."""
import sys
min_hu = float(sys.argv.pop(1))
import functools
import sopi.preprocess as pre
import sopi.render as render
render.hu_to_attenuation = functools.partial(pre.hu_to_attenuation, min_hu=min_hu)
from sopi.cli import main
sys.exit(main(sys.argv[1:]))
