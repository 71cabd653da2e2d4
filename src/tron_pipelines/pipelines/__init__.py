from .pipeline_output import TronPipelineOutput
from .pipeline_tron import LangevinState, TronPipeline, slerp
