"""Write the result file and the terminal summary."""
