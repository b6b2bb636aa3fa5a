"""The repeat task of the paper's section 4: its batches (``data``), the experiment (``experiment``) and its report
(``report``)."""
