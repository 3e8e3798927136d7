from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget


# the module beside this file: a bare name would be looked up on the Hub under evaluate-metric/
module = evaluate.load(str(Path(__file__).resolve().with_name("explanation_agreement.py")))
launch_gradio_widget(module)
