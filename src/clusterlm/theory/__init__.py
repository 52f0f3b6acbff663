"""clusterlm.theory"""
