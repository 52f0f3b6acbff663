"""clusterlm.serve"""
