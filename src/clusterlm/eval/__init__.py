"""clusterlm.eval"""
